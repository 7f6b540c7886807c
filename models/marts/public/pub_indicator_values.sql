{#- indicator_values for publication: numerators and denominators from 1 to the small-cell
    threshold minus 1 are masked, with the complementary cells that keep them from being
    recovered from published totals over org units or periods
    (macros/small_cell_suppression.sql); the value is masked with either. Indicators that
    read only reporting or data-quality counts (about reports, not people) are never masked. -#}
with masks as (

    {{ hp_public_masks('pub_indicator_values') }}

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
from {{ ref('indicator_values') }} as iv
left join masks as mn
    on mn.measure = 'numerator'
    and mn.key_1 = iv.indicator_id
    and mn.org_unit_id = iv.org_unit_id
    and mn.period_id = iv.period_id
left join masks as md
    on md.measure = 'denominator'
    and md.key_1 = iv.indicator_id
    and md.org_unit_id = iv.org_unit_id
    and md.period_id = iv.period_id
