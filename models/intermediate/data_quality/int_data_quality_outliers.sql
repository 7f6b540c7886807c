{#- Outlier checks on every screened value, per series (source, data element, category and
    attribute option combo, org unit and period type), WHO Data Quality Review / DHIS2
    outlier detection. Each method has its own flag so a reader sees which one fired and why:

    z-score        |x - mean| / SD > healthpipe_dq_z_score_threshold (3.0; SD of the population)
    modified z     0.6745 * |x - median| / MAD > healthpipe_dq_modified_z_threshold (3.5);
                   when MAD = 0, 0.7979 * |x - median| / mean absolute deviation from the median
                   (the WHO DQR tool's fallback); robust to the outliers themselves
    min-max        x outside mean +/- healthpipe_dq_min_max_sd (2) * SD (DQR "moderate")
    seasonal       |x - m| > healthpipe_dq_z_score_threshold * s, where m and s are the mean and
                   SD of the same series in the same week or month (+/- healthpipe_dq_seasonal_window)
                   of up to healthpipe_dq_seasonal_years earlier years, with at least
                   healthpipe_dq_seasonal_min_values such values; the first three methods
                   assume a series without seasonality, this one does not.
    A series whose SD (or MAD and mean deviation) is 0 flags nothing: every value is equal.

    The means and SDs aggregate their values in order: left to parallel threads, doubles are
    added in no fixed order and the last bits of a statistic changed between builds of the
    same data. -#}
{{ config(materialized='table') }}


with data_values as (

    select * from {{ ref('int_data_quality_values') }}

),

series as (

    select
        series_id,
        count(*) as series_values,
        {{ hp_ordered_agg('avg', 'value') }} as series_mean,
        {{ hp_ordered_agg('stddev_pop', 'value') }} as series_sd,
        percentile_cont(0.5) within group (order by value) as series_median
    from data_values
    group by series_id

),

deviations as (

    select
        v.*,
        s.series_values,
        s.series_mean,
        s.series_sd,
        s.series_median,
        abs(v.value - s.series_median) as deviation_from_median
    from data_values as v
    join series as s on s.series_id = v.series_id

),

spread as (

    select
        series_id,
        percentile_cont(0.5) within group (order by deviation_from_median) as series_mad,
        {{ hp_ordered_agg('avg', 'deviation_from_median') }} as series_mean_deviation
    from deviations
    group by series_id

),

seasonal as (

    select
        v.series_id,
        v.period_id,
        count(*) as seasonal_values,
        {{ hp_ordered_agg('avg', 'history.value') }} as seasonal_mean,
        {{ hp_ordered_agg('stddev_pop', 'history.value') }} as seasonal_sd
    from data_values as v
    join data_values as history
        on history.series_id = v.series_id
        and history.period_year < v.period_year
        and history.period_year >= v.period_year - {{ var('healthpipe_dq_seasonal_years') }}
        and abs(history.period_of_year - v.period_of_year) <= {{ var('healthpipe_dq_seasonal_window') }}
    where v.period_of_year is not null
    group by v.series_id, v.period_id

),

scored as (

    select
        d.series_id,
        d.source,
        d.data_element_id,
        d.category_option_combo_id,
        d.attribute_option_combo_id,
        d.org_unit_id,
        d.period_id,
        d.period_type,
        d.year_period_id,
        d.value,
        d.series_values,
        d.series_mean,
        d.series_sd,
        d.series_median,
        sp.series_mad,
        sp.series_mean_deviation,
        case when d.series_sd > 0 then (d.value - d.series_mean) / d.series_sd end as z_score,
        case
            when sp.series_mad > 0 then 0.6745 * (d.value - d.series_median) / sp.series_mad
            when sp.series_mean_deviation > 0
                then 0.7979 * (d.value - d.series_median) / sp.series_mean_deviation
        end as modified_z_score,
        d.series_mean - {{ var('healthpipe_dq_min_max_sd') }} * d.series_sd as min_bound,
        d.series_mean + {{ var('healthpipe_dq_min_max_sd') }} * d.series_sd as max_bound,
        coalesce(se.seasonal_values, 0) as seasonal_values,
        se.seasonal_mean,
        se.seasonal_sd
    from deviations as d
    join spread as sp on sp.series_id = d.series_id
    left join seasonal as se
        on se.series_id = d.series_id
        and se.period_id = d.period_id

),

flagged as (

    select
        *,
        coalesce(abs(z_score) > {{ var('healthpipe_dq_z_score_threshold') }}, false)
            as is_z_score_outlier,
        coalesce(abs(modified_z_score) > {{ var('healthpipe_dq_modified_z_threshold') }}, false)
            as is_modified_z_outlier,
        series_sd > 0 and (value < min_bound or value > max_bound) as is_min_max_outlier,
        seasonal_values >= {{ var('healthpipe_dq_seasonal_min_values') }} as has_seasonal_baseline,
        coalesce(
            seasonal_values >= {{ var('healthpipe_dq_seasonal_min_values') }}
            and seasonal_sd > 0
            and abs(value - seasonal_mean) > {{ var('healthpipe_dq_z_score_threshold') }} * seasonal_sd,
            false
        ) as is_seasonal_outlier
    from scored

)

select
    *,
    is_z_score_outlier or is_modified_z_outlier or is_min_max_outlier or is_seasonal_outlier
        as is_outlier,
    {#- Which methods fired, for a reader scanning the mart. -#}
    nullif(
        concat_ws(', ',
            case when is_z_score_outlier then 'z-score' end,
            case when is_modified_z_outlier then 'modified z-score' end,
            case when is_min_max_outlier then 'min-max' end,
            case when is_seasonal_outlier then 'seasonal' end),
        '') as flagged_by
from flagged
