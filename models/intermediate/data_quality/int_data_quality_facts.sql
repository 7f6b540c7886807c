{#- The data-quality checks as counts per org unit and period, stored as the pseudo data
    elements of seed data_quality_elements ("DQ_..."), so health_information indicators read
    them like any count (a rate is a ratio of summed counts at every level and period type),
    the way int_reporting_facts feeds R{dataSet.METRIC}. Zero counts are kept: an org unit
    and period checked without findings has a rate of 0, not a missing value.
    Outlier counts fall in the period of the value checked; rule counts in the period the
    rule was evaluated for; consistency counts in the year compared. -#}
{{ config(materialized='table') }}

with outlier_counts as (

    select
        org_unit_id,
        period_id,
        count(*) as values_checked,
        sum(case when is_z_score_outlier then 1 else 0 end) as z_score,
        sum(case when is_modified_z_outlier then 1 else 0 end) as modified_z,
        sum(case when is_min_max_outlier then 1 else 0 end) as min_max,
        sum(case when has_seasonal_baseline then 1 else 0 end) as seasonal_checked,
        sum(case when is_seasonal_outlier then 1 else 0 end) as seasonal,
        sum(case when is_outlier then 1 else 0 end) as any_method
    from {{ ref('int_data_quality_outliers') }}
    group by org_unit_id, period_id

),

rule_counts as (

    select
        org_unit_id,
        period_id,
        count(*) as rules_checked,
        sum(case when is_violation then 1 else 0 end) as rules_violated
    from {{ ref('int_validation_rule_results') }}
    group by org_unit_id, period_id

),

consistency_counts as (

    select
        org_unit_id,
        period_id,
        count(*) as totals_checked,
        sum(case when is_inconsistent then 1 else 0 end) as totals_flagged
    from {{ ref('int_data_quality_consistency') }}
    group by org_unit_id, period_id

),

counts as (

    {%- set measures = [
        ('outlier_counts', 'values_checked', 'DQ_OUTLIER_VALUES_CHECKED'),
        ('outlier_counts', 'z_score', 'DQ_OUTLIERS_Z_SCORE'),
        ('outlier_counts', 'modified_z', 'DQ_OUTLIERS_MOD_Z_SCORE'),
        ('outlier_counts', 'min_max', 'DQ_OUTLIERS_MIN_MAX'),
        ('outlier_counts', 'seasonal_checked', 'DQ_SEASONAL_VALUES_CHECKED'),
        ('outlier_counts', 'seasonal', 'DQ_OUTLIERS_SEASONAL'),
        ('outlier_counts', 'any_method', 'DQ_OUTLIERS_ANY'),
        ('rule_counts', 'rules_checked', 'DQ_RULES_CHECKED'),
        ('rule_counts', 'rules_violated', 'DQ_RULES_VIOLATED'),
        ('consistency_counts', 'totals_checked', 'DQ_CONSISTENCY_CHECKED'),
        ('consistency_counts', 'totals_flagged', 'DQ_CONSISTENCY_FLAGGED'),
    ] %}
    {%- for relation, column, element in measures %}
    select
        '{{ element }}' as data_element_id,
        org_unit_id,
        period_id,
        cast({{ column }} as {{ hp_type_double() }}) as value
    from {{ relation }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}

)

select
    data_element_id,
    'HllvX50cXC0' as category_option_combo_id,
    'HllvX50cXC0' as attribute_option_combo_id,
    org_unit_id,
    period_id,
    value
from counts
