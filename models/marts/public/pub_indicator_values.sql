{#- indicator_values for publication: numerators and denominators from 1 to the small-cell
    threshold minus 1 are masked, with complementary masking along the org-unit hierarchy
    per indicator and period; the value is masked with either. Indicators that read only
    reporting or data-quality counts (about reports, not people) are never masked. -#}
with people_indicators as (

    select distinct o.indicator_id
    from {{ ref('stg_healthpipe__indicator_operands') }} as o
    left join {{ ref('data_quality_elements') }} as q on q.data_element_id = o.data_element_id
    where o.data_element_id not like 'R:%' and q.data_element_id is null

),

indicator_values as (

    select
        iv.*,
        pi.indicator_id is not null as is_sensitive
    from {{ ref('indicator_values') }} as iv
    left join people_indicators as pi on pi.indicator_id = iv.indicator_id

),

masked_numerators as (

    {{ hp_masked_cells('indicator_values', ['indicator_id', 'period_id'], 'numerator',
                       ref('dim_org_unit'), sensitive='c.is_sensitive') }}

),

masked_denominators as (

    {{ hp_masked_cells('indicator_values', ['indicator_id', 'period_id'], 'denominator',
                       ref('dim_org_unit'), sensitive='c.is_sensitive') }}

)

select
    iv.indicator_id,
    iv.domain,
    iv.org_unit_id,
    iv.org_unit_level,
    iv.period_id,
    iv.period_type,
    case when mn.is_masked then null else iv.numerator end as numerator,
    case when md.is_masked then null else iv.denominator end as denominator,
    iv.factor,
    case when mn.is_masked or md.is_masked then null else iv.value end as value,
    coalesce(mn.is_masked, false) as is_numerator_suppressed,
    coalesce(md.is_masked, false) as is_denominator_suppressed,
    coalesce(mn.is_masked, false) or coalesce(md.is_masked, false) as is_suppressed
from indicator_values as iv
left join masked_numerators as mn
    on mn.org_unit_id = iv.org_unit_id
    and mn.indicator_id = iv.indicator_id
    and mn.period_id = iv.period_id
left join masked_denominators as md
    on md.org_unit_id = iv.org_unit_id
    and md.indicator_id = iv.indicator_id
    and md.period_id = iv.period_id
